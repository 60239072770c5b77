#!/usr/bin/env python3
"""Integration tests for the request and reporting options of `tailcut fetch` (docs/fetch.md):
-X, -H, -d, --retry-all, --rate, --summary-json, --cacert and --insecure.

A recording server (http.server in a thread on 127.0.0.1 port 0) keeps what every request
carried: method, path, headers in order, body bytes; a path /status/N answers N. The open-loop
test uses the real simulator (`tailcut upstream`) with a scenario that stalls one request for a
second and reads its arrival times. The TLS tests make a throw-away CA with the openssl CLI
(tchelpers). Python standard library only; every test runs under a watchdog.
"""
import collections
import http.server
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import tchelpers as th  # noqa: E402
from tchelpers import SLOW, Watchdog  # noqa: E402
from test_fetch import BIN, fetch, post, stats, upstream  # noqa: E402

ENGINES = ("native", "curl")


class Recorder(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def __getattr__(self, name):
        if name.startswith("do_"):  # every method, whatever its name
            return self.answer
        raise AttributeError(name)

    def answer(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        with self.server.lock:
            self.server.seen.append({"method": self.command, "path": self.path,
                                     "headers": list(self.headers.items()), "body": body})
        status = 200
        if self.path.startswith("/status/"):
            status = int(self.path.split("/")[2])
        out = b'{"ok":true}'
        self.send_response(status)
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args):
        pass


class RecordingServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), Recorder)
        self.lock = threading.Lock()
        self.seen = []
        self.url = "http://127.0.0.1:%d" % self.server_address[1]

    def take(self):
        with self.lock:
            seen, self.seen = self.seen, []
        return seen


def header_values(req, name):
    return [v for k, v in req["headers"] if k.lower() == name.lower()]


class FetchOps(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.srv = RecordingServer()
        cls.thread = th.serve_in_thread(cls.srv)
        cls.dir = tempfile.mkdtemp(prefix="tailcut-fetch-ops-")

    @classmethod
    def tearDownClass(cls):
        th.stop_server(cls.srv, cls.thread)
        shutil.rmtree(cls.dir, ignore_errors=True)

    def setUp(self):
        self.dog = Watchdog(60 * SLOW)
        self.srv.take()

    def tearDown(self):
        self.dog.cancel()

    def path(self, name):
        return os.path.join(self.dir, name)

    def write(self, name, data):
        with open(self.path(name), "wb") as f:
            f.write(data)
        return self.path(name)

    def one(self, *args):
        """Runs fetch on one URL of the recording server; returns (result line, request seen)."""
        rc, lines, err = fetch(*args)
        self.assertEqual(rc, 0, err)
        self.assertEqual(len(lines), 1, err)
        seen = self.srv.take()
        self.assertEqual(len(seen), 1, seen)
        return lines[0], seen[0]

    # ---- what reaches the server -----------------------------------------------------------

    def test_method_headers_and_literal_body_reach_both_engines(self):
        for engine in ENGINES:
            with self.subTest(engine=engine):
                line, req = self.one("--http-engine", engine, "-X", "PUT", "-H", "X-One: 1",
                                     "-H", "X-Two:   two words  ", "-H", "x-one: again",
                                     "-H", "X-Empty:", "-d", "hello=world&x",
                                     self.srv.url + "/put?q=1")
                self.assertEqual(line["status"], 200)
                self.assertEqual(req["method"], "PUT")
                self.assertEqual(req["path"], "/put?q=1")
                self.assertEqual(header_values(req, "X-One"), ["1", "again"])  # in order
                self.assertEqual(header_values(req, "X-Two"), ["two words"])
                self.assertEqual(header_values(req, "X-Empty"), [""])
                self.assertEqual(req["body"], b"hello=world&x")
                self.assertEqual(header_values(req, "Content-Length"), ["13"])
                # No Content-Type that the user did not ask for, from either engine.
                self.assertEqual(header_values(req, "Content-Type"), [])

    def test_data_file_is_sent_verbatim_and_implies_post(self):
        data = bytes(range(256)) * 64 + b"\0\r\n\0tail\n"  # binary, NULs, CR LF, > 16 KB
        name = self.write("body.bin", data)
        for engine in ENGINES:
            with self.subTest(engine=engine):
                _, req = self.one("--http-engine", engine, "-d", "@" + name,
                                  "-H", "Content-Type: application/octet-stream",
                                  self.srv.url + "/post")
                self.assertEqual(req["method"], "POST")
                self.assertEqual(req["body"], data)
                self.assertEqual(header_values(req, "Content-Type"),
                                 ["application/octet-stream"])

    def test_explicit_method_wins_over_data_and_empty_data(self):
        for engine in ENGINES:
            with self.subTest(engine=engine):
                _, req = self.one("--http-engine", engine, "-X", "GET", "-d", "q",
                                  self.srv.url + "/get")
                self.assertEqual((req["method"], req["body"]), ("GET", b"q"))
                _, req = self.one("--http-engine", engine, "-d", "", self.srv.url + "/empty")
                self.assertEqual((req["method"], req["body"]), ("POST", b""))
                self.assertEqual(header_values(req, "Content-Length"), ["0"])
                _, req = self.one("--http-engine", engine, "-X", "DELETE",
                                  self.srv.url + "/del")
                self.assertEqual((req["method"], req["body"]), ("DELETE", b""))
        empty = self.write("empty.bin", b"")
        _, req = self.one("-d", "@" + empty, self.srv.url + "/emptyfile")
        self.assertEqual((req["method"], req["body"]), ("POST", b""))

    # ---- bad values --------------------------------------------------------------------------

    def assert_usage_error(self, args, flag):
        p = subprocess.run([BIN, "fetch", *args, self.srv.url + "/never"], capture_output=True,
                           timeout=20 * SLOW)
        err = p.stderr.decode(errors="replace")
        self.assertEqual(p.returncode, 2, (args, err))
        self.assertEqual(len(err.splitlines()), 1, err)
        self.assertIn(flag, err)
        self.assertEqual(p.stdout, b"")

    def test_bad_method_and_header_values_exit_2(self):
        # A few of each: tests/unit/fetch/test_fetch_parse.c goes through the edge cases.
        for bad in ("", "G T", "GET\r\nX: y", "A/B"):
            self.assert_usage_error(["-X", bad], "-X")
        for bad in ("NoColon", "A B: c", "X: a\r\nInjected: 1", "transfer-encoding: chunked"):
            self.assert_usage_error(["-H", bad], "-H")
        for bad in ("0", "-1", "1e3", "2000000"):
            self.assert_usage_error(["--rate", bad], "--rate")
        self.assertEqual(self.srv.take(), [])  # nothing was sent

    def test_unreadable_files_exit_2(self):
        missing = self.path("missing")
        self.assert_usage_error(["-d", "@" + missing], "-d")
        self.assert_usage_error(["-d", "@" + self.dir], "-d")  # a directory
        self.assert_usage_error(["-d", "@"], "-d")
        self.assert_usage_error(["--cacert", missing], "--cacert")
        self.assert_usage_error(["--cacert", self.dir], "--cacert")
        self.assert_usage_error(["-i", missing], missing)
        self.assert_usage_error(["--summary-json", os.path.join(missing, "s.json")],
                                "--summary-json")
        big = self.path("big.bin")
        with open(big, "wb") as f:
            f.truncate(16 * 1024 * 1024 + 1)
        self.assert_usage_error(["-d", "@" + big], "-d")
        os.unlink(big)
        self.assertEqual(self.srv.take(), [])

    def test_help_names_the_new_flags(self):
        p = subprocess.run([BIN, "fetch", "--help"], capture_output=True, timeout=10)
        out = p.stdout.decode()
        for flag in ("-X", "-H", "-d", "--cacert", "--insecure", "--retry-all", "--rate",
                     "--summary-json"):
            self.assertIn(flag, out)
        header_line = [ln for ln in out.splitlines() if ln.lstrip().startswith("-H")]
        self.assertTrue(header_line and "(repeatable)" in out, out)

    # ---- retries and methods -----------------------------------------------------------------

    def attempts(self, *args):
        rc, lines, err = fetch("--retries", "2", *args, self.srv.url + "/status/503")
        self.assertEqual(rc, 3, err)
        self.assertEqual(lines[0]["status"], 503)
        return len(self.srv.take())

    def test_only_idempotent_methods_are_retried_without_retry_all(self):
        self.assertEqual(self.attempts(), 3)  # GET
        self.assertEqual(self.attempts("-X", "PUT"), 3)
        self.assertEqual(self.attempts("-d", "x"), 1)  # POST
        self.assertEqual(self.attempts("-X", "PATCH"), 1)
        self.assertEqual(self.attempts("-d", "x", "--retry-all"), 3)
        self.assertEqual(self.attempts("-X", "PATCH", "--retry-all"), 3)

    # ---- --summary-json ----------------------------------------------------------------------

    def test_summary_json_matches_the_lines(self):
        out = self.path("summary.json")
        urls = ([self.srv.url + "/status/200"] * 5 + [self.srv.url + "/status/404"] * 2 +
                [self.srv.url + "/status/500", "http://127.0.0.1:1/refused", "not a url"])
        rc, lines, err = fetch("-c", "3", "--summary-json", out, *urls)
        self.assertEqual(rc, 3, err)
        with open(out) as f:
            text = f.read()
        self.assertTrue(text.endswith("}\n") and text.count("\n") == 1, text)
        s = json.loads(text)
        self.assertEqual(s["requests"], len(lines))
        self.assertEqual(s["ok"], sum(1 for d in lines if 200 <= d["status"] < 400))
        self.assertEqual(s["failed"], len(lines) - s["ok"])
        self.assertEqual(s["no_response"], sum(1 for d in lines if d["error"] is not None))
        statuses = collections.Counter(str(d["status"]) for d in lines)
        self.assertEqual(s["status"], dict(statuses))
        self.assertEqual(s["status_other"], 0)
        self.assertEqual(s["errors"], {"ECONNREFUSED": 1, "EURL": 1})
        self.assertEqual(s["latency_ms"]["samples"], len(lines) - 1)  # the bad URL is no request
        self.assertEqual(s["latency_ms"]["max"],
                         max(d["ms"] for d in lines if d["url"] != "not a url"))
        self.assertLessEqual(s["latency_ms"]["p50"], s["latency_ms"]["p90"])
        self.assertLessEqual(s["latency_ms"]["p99"], s["latency_ms"]["max"])
        self.assertEqual((s["attempts"], s["retries"]), (len(lines), 0))
        self.assertEqual((s["exit_status"], s["interrupted"], s["rate"]), (3, None, None))
        self.assertEqual(s["concurrency"], 3)
        self.assertGreater(s["duration_s"], 0)
        self.assertAlmostEqual(s["requests_per_s"], s["requests"] / s["duration_s"],
                               delta=s["requests_per_s"] * 0.01 + 1)

    def test_summary_json_written_after_sigterm(self):
        out = self.path("term.json")
        with upstream("fixed:5000") as up:
            post(up.port, "/scenario", json.dumps([{"delay_ms": 0}]))
            p = subprocess.Popen([BIN, "fetch", "--summary-json", out, "-i", "-"],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE)
            try:
                base = "http://127.0.0.1:%d/api/work" % up.port
                p.stdin.write(("%s?a\n%s?b\n" % (base, base)).encode())
                p.stdin.flush()
                first = json.loads(p.stdout.readline())
                self.assertTrue(th.wait_for(lambda: stats(up.port)["in_flight"] >= 1, 10 * SLOW))
                p.send_signal(signal.SIGTERM)
                _, err = p.communicate(timeout=10 * SLOW)
            finally:
                if p.poll() is None:
                    p.kill()
                    p.wait(10)
            self.assertEqual(p.returncode, 143, err)
            self.assertEqual(first["status"], 200)
            with open(out) as f:
                s = json.load(f)
            self.assertEqual((s["requests"], s["ok"], s["status"]), (1, 1, {"200": 1}))
            self.assertEqual((s["interrupted"], s["exit_status"]), ("SIGTERM", 143))
            self.assertEqual(s["not_finished"], 1)

    # ---- --rate: open loop ---------------------------------------------------------------

    def test_rate_is_open_loop_and_counts_a_stall_as_latency(self):
        n, rate, stall_i, stall_ms = 20, 10.0, 5, 1000
        out = self.path("rate.json")
        with upstream("fixed:0") as up:
            steps = [{"delay_ms": 0}] * n
            steps[stall_i] = {"delay_ms": stall_ms}
            post(up.port, "/scenario", json.dumps(steps))
            urls = ["http://127.0.0.1:%d/api/work?i=%d" % (up.port, i) for i in range(n)]
            t0 = time.monotonic()
            rc, lines, err = fetch("-c", "1", "--rate", "10", "--order", "input",
                                   "--summary-json", out, *urls)
            took = time.monotonic() - t0
            arrivals = stats(up.port)["arrivals_ms"]
        self.assertEqual(rc, 0, err)
        self.assertEqual([d["url"] for d in lines], urls)
        ms = [d["ms"] for d in lines]
        self.assertEqual(len(arrivals), n)
        # The schedule: request i is sent no earlier than i/rate after request 0, so the run
        # lasts at least (n-1)/rate whatever the server does. (Slack: arrivals are seen by the
        # server, and request 0's may come late, after its connection was set up, on a loaded
        # machine.)
        rel = [a - arrivals[0] for a in arrivals]
        for i, a in enumerate(rel):
            self.assertGreaterEqual(a, i * 1000 / rate - 60, (i, rel))
        self.assertGreaterEqual(took, (n - 1) / rate)
        self.assertLess(took, (n - 1) / rate + 1 + 5 * SLOW)  # not (n-1)/rate + a full stall x n
        # The stalled request takes the stall; those scheduled during it waited for the one
        # connection (-c 1), and their ms count from their scheduled time, so each includes the
        # rest of the stall: about stall_end - scheduled.
        stall_end = stall_i * 1000 / rate + stall_ms
        self.assertGreaterEqual(ms[stall_i], stall_ms - 5)
        for i in range(stall_i + 1, n):
            sched = i * 1000 / rate
            if sched < stall_end - 50:
                self.assertGreaterEqual(ms[i], stall_end - sched - 30, (i, ms))
        # Those scheduled during the stall went out when it ended, not on their schedule.
        self.assertGreaterEqual(rel[stall_i + 1] - rel[stall_i], stall_ms - 30, rel)
        with open(out) as f:
            s = json.load(f)
        self.assertEqual((s["requests"], s["ok"], s["rate"]), (n, n, 10))
        self.assertGreaterEqual(s["latency_ms"]["max"], stall_ms - 5)
        self.assertGreaterEqual(s["latency_ms"]["p50"], 0)

    def test_fractional_rate(self):
        t0 = time.monotonic()
        rc, lines, err = fetch("--rate", "2.5", *([self.srv.url + "/r"] * 3))
        took = time.monotonic() - t0
        self.assertEqual(rc, 0, err)
        self.assertEqual(len(lines), 3)
        self.assertGreaterEqual(took, 0.8)  # at 0, 0.4 and 0.8 s
        # The end of the input is seen at once, not one interval (here 10 s) after the last.
        t0 = time.monotonic()
        rc, lines, err = fetch("--rate", "0.1", self.srv.url + "/once")
        self.assertEqual((rc, len(lines)), (0, 1), err)
        self.assertLess(time.monotonic() - t0, 5)


class FetchTLS(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = th.tls_dir("tailcut-fetch-tls-")
        cls.servers = []
        # The second server shows the CA's own certificate: self-signed, and not for 127.0.0.1.
        for cert, key in (("server.pem", "server.key"), ("ca.pem", "ca.key")):
            srv = th.TLSServer(th.tls_server_context(cls.dir, cert, key))
            cls.servers.append((srv, th.serve_in_thread(srv)))
        cls.ca_url = "https://127.0.0.1:%d/x" % cls.servers[0][0].server_address[1]
        cls.self_url = "https://127.0.0.1:%d/x" % cls.servers[1][0].server_address[1]

    @classmethod
    def tearDownClass(cls):
        for srv, thread in cls.servers:
            th.stop_server(srv, thread)
        shutil.rmtree(cls.dir, ignore_errors=True)

    def setUp(self):
        self.dog = Watchdog(60 * SLOW)

    def tearDown(self):
        self.dog.cancel()

    def test_cacert_trusts_the_test_ca(self):
        rc, lines, err = fetch("--cacert", os.path.join(self.dir, "ca.pem"), "--body",
                               self.ca_url)
        self.assertEqual(rc, 0, err)
        self.assertEqual((lines[0]["status"], lines[0]["body"]), (200, '{"ok":true}'))

    def test_without_cacert_the_chain_is_rejected(self):
        rc, lines, err = fetch(self.ca_url)
        self.assertEqual(rc, 3, err)
        self.assertEqual(lines[0]["status"], 0)
        self.assertRegex(lines[0]["error"], "(?i)certificate")
        self.assertIn("ETLS=1", err)

    def test_insecure_accepts_a_self_signed_certificate(self):
        rc, lines, err = fetch(self.self_url)
        self.assertEqual(rc, 3, err)
        self.assertRegex(lines[0]["error"], "(?i)certificate")
        rc, lines, err = fetch("--insecure", self.self_url)
        self.assertEqual(rc, 0, err)
        self.assertEqual(lines[0]["status"], 200)


if __name__ == "__main__":
    unittest.main()
