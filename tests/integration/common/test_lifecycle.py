"""Integration tests of how `tailcut serve` (and `tailcut upstream`) lives and logs (issue 15):
X-Request-Id taken, generated and echoed; /readyz and --shutdown-delay; sd_notify to a fake
NOTIFY_SOCKET (path and abstract); the access log in both formats, field by field, escaping a
hostile target, reopened after rename + SIGUSR1; SIGHUP ignored.
"""
import datetime
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import tchelpers as th  # noqa: E402

HEX32 = re.compile(r"^[0-9a-f]{32}$")
TEXT_LINE = re.compile(
    r'^(?P<time>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z) (?P<client>\S+) '
    r'"(?P<method>\S+) (?P<target>\S+) (?P<protocol>\S+)" (?P<status>\d+) (?P<bytes>\d+) '
    r'(?P<duration_us>\d+|-) (?P<attempts>\d+|-) (?P<request_id>\S+)$')


def exchange(port, raw, timeout=10):
    """Sends raw request bytes on a new connection and reads until the server closes.
    Returns (status, headers, bytes received)."""
    with th.connect(port, timeout) as s:
        s.sendall(raw)
        data = th.recv_all(s, timeout)
    head = data.split(b"\r\n\r\n", 1)[0]
    status, headers = th.parse_head(head)
    return status, headers, len(data)


def get(port, target, headers=(), protocol=b"HTTP/1.1", method=b"GET"):
    raw = method + b" " + target + b" " + protocol + b"\r\nHost: t\r\nConnection: close\r\n"
    raw += b"".join(h + b"\r\n" for h in headers) + b"\r\n"
    return exchange(port, raw)


def parse_time(s):
    return datetime.datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=datetime.timezone.utc).timestamp()


def serve(*args):
    return th.Proc("serve", "--workers", "2", *args)


class FlagsTest(unittest.TestCase):
    def test_bad_values(self):
        for cmd, args, named in (("serve", ["--access-log-format", "xml"], "--access-log-format"),
                                 ("serve", ["--access-log-format", ""], "--access-log-format"),
                                 ("serve", ["--shutdown-delay", "-1"], "--shutdown-delay"),
                                 ("serve", ["--shutdown-delay", "1s"], "--shutdown-delay"),
                                 ("serve", ["--access-log", "/nonexistent-dir/x"], "--access-log"),
                                 ("upstream", ["--access-log-format", "JSON"],
                                  "--access-log-format")):
            out = subprocess.run([th.Proc.bin(), cmd, *args], capture_output=True, text=True,
                                 timeout=10)
            self.assertEqual(out.returncode, 2, args)
            lines = out.stderr.strip().splitlines()
            self.assertEqual(len(lines), 1, out.stderr)
            self.assertIn(named, lines[0])
        out = subprocess.run([th.Proc.bin(), "serve", "--help"], capture_output=True, text=True,
                             timeout=10)
        for flag in ("--access-log-format text|json", "--shutdown-delay MS"):
            self.assertIn(flag, out.stdout)


class RequestIdTest(unittest.TestCase):
    def test_taken_generated_and_echoed(self):
        with serve() as p:
            visible = bytes(range(0x21, 0x7F))  # every visible byte, '"' and '\\' included
            longest = (visible * 2)[:128]
            for path in (b"/healthz", b"/no-such-path"):
                for sent, want in ((b"abc-123_XYZ", b"abc-123_XYZ"),
                                   (b"  padded\t", b"padded"),
                                   (longest, longest),
                                   (visible[:94], visible[:94])):
                    st, hdrs, _ = get(p.port, path, [b"X-Request-Id: " + sent])
                    self.assertEqual(st, 200 if path == b"/healthz" else 404)
                    self.assertEqual(hdrs["x-request-id"].encode("latin-1"), want, sent)
                seen = set()
                for bad in ([b"X-Request-Id: " + longest + b"x"],   # 129 bytes
                            [b"X-Request-Id: a b"],                   # a space inside
                            [b"X-Request-Id:"],                       # empty
                            [b"X-Request-Id: caf\xc3\xa9"],           # not ASCII
                            [b"X-Request-Id: one", b"X-Request-Id: two"],  # which one?
                            []):
                    st, hdrs, _ = get(p.port, path, bad)
                    rid = hdrs["x-request-id"]
                    self.assertRegex(rid, HEX32, bad)
                    seen.add(rid)
                self.assertEqual(len(seen), 6)  # each drawn anew
            # answers the server makes itself carry one too: 400 (malformed), 405, 414
            st, hdrs, _ = exchange(p.port, b"GET /healthz HTTP/1.1\r\nBad Header\r\n\r\n")
            self.assertEqual(st, 400)
            self.assertRegex(hdrs["x-request-id"], HEX32)
            st, hdrs, _ = get(p.port, b"/healthz", [b"X-Request-Id: post-1"], method=b"POST")
            self.assertEqual((st, hdrs["x-request-id"]), (405, "post-1"))
            st, hdrs, _ = get(p.port, b"/" + b"a" * 9000)
            self.assertEqual(st, 414)
            self.assertRegex(hdrs["x-request-id"], HEX32)
            st, hdrs, _ = get(p.port, b"/healthz", [b"X-Request-Id: head-1"], method=b"HEAD")
            self.assertEqual((st, hdrs["x-request-id"]), (200, "head-1"))


class ReadyTest(unittest.TestCase):
    def test_readyz_before_and_after_sigterm(self):
        # A slow upstream keeps one request in flight through the drain, so that a kept-alive
        # connection can still ask /readyz after the listener closed.
        with th.Proc("upstream", "--profile", "fixed:1500", "--access-log", "off") as up:
            # one worker: a drain closes the idle connections of a worker with nothing in flight
            p = serve("--workers", "1", "--upstream", "http://127.0.0.1:%d/api/work" % up.port,
                      "--access-log", "off")
            try:
                st, hdrs, body = th.http_request(p.port, "GET", "/readyz")
                self.assertEqual((st, body), (200, b'{"status":"ready"}'))
                self.assertEqual(hdrs["content-type"], "application/json")
                st, _, _ = th.http_request(p.port, "HEAD", "/readyz?x=1")
                self.assertEqual(st, 200)
                st, hdrs, _ = th.http_request(p.port, "POST", "/readyz")
                self.assertEqual((st, hdrs["allow"]), (405, "GET, HEAD"))
                idle = th.connect(p.port, 10)
                idle.sendall(b"GET /readyz HTTP/1.1\r\nHost: t\r\n\r\n")
                self.assertEqual(th.read_response(idle)[0], 200)
                slow = th.connect(p.port, 10)
                slow.sendall(b"GET /api/first?timeout=5000 HTTP/1.1\r\nHost: t\r\n\r\n")
                time.sleep(0.3)  # the attempts are out
                p.proc.send_signal(signal.SIGTERM)
                self.assertTrue(th.wait_for(lambda: "draining" in p.stderr_text(), 5))
                idle.sendall(b"GET /readyz HTTP/1.1\r\nHost: t\r\n\r\n")
                st, hdrs, body = th.read_response(idle)
                self.assertEqual((st, body), (503, b'{"status":"draining"}'))
                self.assertEqual(hdrs["connection"], "close")
                self.assertEqual(th.read_response(slow)[0], 200)  # in flight: finished
                idle.close()
                slow.close()
                self.assertEqual(p.proc.wait(15), 0)
            finally:
                p.kill()

    def test_shutdown_delay(self):
        delay = 2.0
        p = serve("--shutdown-delay", str(int(delay * 1000)), "--access-log", "off",
                  "--admin-listen", "127.0.0.1:0")
        try:
            st, _, body = th.http_request(p.admin_port, "GET", "/readyz")
            self.assertEqual((st, body), (200, b'{"status":"ready"}'))
            kept = th.connect(p.port, 10)
            kept.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
            st, hdrs, _ = th.read_response(kept)
            self.assertEqual((st, hdrs["connection"]), (200, "keep-alive"))
            t0 = time.monotonic()
            p.proc.send_signal(signal.SIGTERM)
            self.assertTrue(th.wait_for(lambda: "not ready" in p.stderr_text(), 5))
            # still accepting and answering, every answer closing its connection
            st, hdrs, body = th.http_request(p.port, "GET", "/readyz",
                                             headers={"Connection": "keep-alive"})
            self.assertEqual((st, body), (503, b'{"status":"draining"}'))
            self.assertEqual(hdrs["connection"], "close")
            st, hdrs, body = th.http_request(p.port, "GET", "/healthz",
                                             headers={"Connection": "keep-alive"})
            self.assertEqual((st, body, hdrs["connection"]), (200, b'{"status":"ok"}', "close"))
            st, _, body = th.http_request(p.admin_port, "GET", "/readyz")  # one readiness
            self.assertEqual((st, body), (503, b'{"status":"draining"}'))
            kept.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
            st, hdrs, _ = th.read_response(kept)
            self.assertEqual((st, hdrs["connection"]), (200, "close"))
            self.assertEqual(th.recv_all(kept, 5), b"")  # and it is closed after
            kept.close()
            self.assertLess(time.monotonic() - t0, delay)  # all of it inside the delay
            self.assertEqual(p.proc.wait(15), 0)
            self.assertGreaterEqual(time.monotonic() - t0, delay - 0.05)
            self.assertIn("shutdown delay over, draining", p.stderr_text())
        finally:
            p.kill()

    def test_second_signal_during_delay_exits_1(self):
        p = serve("--shutdown-delay", "5000", "--access-log", "off")
        try:
            p.proc.send_signal(signal.SIGTERM)
            self.assertTrue(th.wait_for(lambda: "not ready" in p.stderr_text(), 5))
            p.proc.send_signal(signal.SIGTERM)
            self.assertEqual(p.proc.wait(5), 1)
        finally:
            p.kill()


class NotifyTest(unittest.TestCase):
    def run_with(self, env_value, bind_addr):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(bind_addr)
        sock.settimeout(10 * th.SLOW)
        old = os.environ.get("NOTIFY_SOCKET")
        os.environ["NOTIFY_SOCKET"] = env_value
        try:
            p = serve("--access-log", "off")
        finally:
            if old is None:
                del os.environ["NOTIFY_SOCKET"]
            else:
                os.environ["NOTIFY_SOCKET"] = old
        try:
            self.assertEqual(sock.recv(256), b"READY=1")
            p.stop()
            self.assertEqual(sock.recv(256), b"STOPPING=1")
            self.assertNotIn("notify", p.stderr_text())
        finally:
            p.kill()
            sock.close()

    def test_path_socket(self):
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "notify")
            self.run_with(path, path)

    def test_abstract_socket(self):
        name = "tailcut-test-%d-%d" % (os.getpid(), time.monotonic_ns())
        self.run_with("@" + name, "\0" + name)

    def test_unreachable_socket_is_not_fatal(self):
        with tempfile.TemporaryDirectory() as d:
            os.environ["NOTIFY_SOCKET"] = os.path.join(d, "nobody-listens")
            try:
                p = serve("--access-log", "off")
            finally:
                del os.environ["NOTIFY_SOCKET"]
            with p:
                self.assertEqual(th.http_request(p.port, "GET", "/healthz")[0], 200)
            err = p.stderr_text()
            self.assertIn("tailcut: cannot notify systemd (READY=1)", err)
            self.assertIn("tailcut: cannot notify systemd (STOPPING=1)", err)


class AccessLogTest(unittest.TestCase):
    def run_requests(self, port):
        """Known requests; returns what each should log: (method, target, protocol, status,
        bytes, attempts, request id)."""
        want = []
        st, hdrs, n = get(port, b"/healthz", [b"X-Request-Id: hc-1"])
        want.append(("GET", "/healthz", "HTTP/1.1", st, n, None, "hc-1"))
        st, hdrs, n = get(port, b"/api/smart?timeout=5000&user=42")
        want.append(("GET", "/api/smart?timeout=5000&user=42", "HTTP/1.1", st, n,
                     int(hdrs["x-tailcut-attempts"]), hdrs["x-request-id"]))
        st, hdrs, n = get(port, b"/api/first?timeout=abc", [b"X-Request-Id: bad-t"])
        want.append(("GET", "/api/first?timeout=abc", "HTTP/1.1", st, n, 0, "bad-t"))
        st, hdrs, n = get(port, b"/missing", protocol=b"HTTP/1.0")
        want.append(("GET", "/missing", "HTTP/1.0", st, n, None, hdrs["x-request-id"]))
        st, hdrs, n = get(port, b"/readyz", method=b"HEAD")
        want.append(("HEAD", "/readyz", "HTTP/1.1", st, n, None, hdrs["x-request-id"]))
        st, hdrs, n = exchange(port, b"GET /x HTTP/1.1\r\nBad Header\r\n\r\n")
        want.append((None, None, None, st, n, None, hdrs["x-request-id"]))  # malformed
        st, hdrs, n = exchange(port, b"GET /big HTTP/1.1\r\nX: " + b"y" * 17000 + b"\r\n\r\n")
        want.append(("GET", "/big", "HTTP/1.1", st, n, None, hdrs["x-request-id"]))
        st, hdrs, n = exchange(port, b"BREW\x01 /x HTTP/1.1\r\n\r\n")  # no request line
        want.append((None, None, None, st, n, None, hdrs["x-request-id"]))
        self.assertEqual([w[3] for w in want], [200, 200, 400, 404, 200, 400, 431, 400])
        return want

    def check(self, records, want, t0, t1):
        self.assertEqual(len(records), len(want), records)
        for rec, (method, target, protocol, status, nbytes, attempts, rid) in zip(records, want):
            self.assertGreaterEqual(parse_time(rec["time"]), t0 - 1)
            self.assertLessEqual(parse_time(rec["time"]), t1 + 1)
            self.assertEqual(rec["client"], "127.0.0.1")
            self.assertEqual((rec["method"], rec["target"], rec["protocol"]),
                             (method, target, protocol))
            self.assertEqual(rec["status"], status)
            self.assertEqual(rec["bytes"], nbytes)  # exactly what the client received
            if method is None or status == 431:  # never read whole: no duration
                self.assertIsNone(rec["duration_us"])
            else:
                self.assertGreaterEqual(rec["duration_us"], 0)
                self.assertLess(rec["duration_us"], 10_000_000)
            self.assertEqual(rec["attempts"], attempts)
            self.assertEqual(rec["request_id"], rid)

    @staticmethod
    def text_record(line):
        m = TEXT_LINE.match(line)
        if m is None:
            raise AssertionError("not a text access-log line: %r" % line)
        r = m.groupdict()
        if r["method"] == "-":
            assert (r["target"], r["protocol"]) == ("-", "-"), line
            r["method"] = r["target"] = r["protocol"] = None
        for k in ("status", "bytes", "duration_us", "attempts"):
            r[k] = None if r[k] == "-" else int(r[k])
        return r

    def run_format(self, fmt):
        # A fixed upstream: the embedded simulator's exponea deck can deal three bad attempts in
        # a row (one a hang), and the /api/smart request of run_requests must answer 200.
        with tempfile.TemporaryDirectory() as d, \
                th.Proc("upstream", "--profile", "fixed:5", "--access-log", "off") as up:
            path = os.path.join(d, "access.log")
            t0 = time.time()
            with serve("--workers", "1", "--access-log", path, "--access-log-format", fmt,
                       "--upstream", "http://127.0.0.1:%d/api/work" % up.port) as p:
                want = self.run_requests(p.port)
            with open(path, "rb") as f:
                data = f.read()
            self.assertTrue(data.endswith(b"\n"))
            lines = data.decode("ascii").splitlines()
            if fmt == "json":
                records = [json.loads(line) for line in lines]
                for r in records:
                    self.assertEqual(list(r), ["time", "client", "method", "target", "protocol",
                                               "status", "bytes", "duration_us", "attempts",
                                               "request_id"])
            else:
                records = [self.text_record(line) for line in lines]
            # one worker: lines in request order
            self.check(records, want, t0, time.time())

    def test_text(self):
        self.run_format("text")

    def test_json(self):
        self.run_format("json")

    def test_hostile_target_escaped(self):
        # '"', '\\', a tab and 0xff reach the handler (0x01 is refused as malformed by the
        # parser, so it never shows in a target); %20 stays as sent.
        target = b'/a"b\\c%20d\t\xff'
        rid = b'q"\\'
        for fmt in ("text", "json"):
            with self.subTest(fmt=fmt):
                p = serve("--workers", "1", "--access-log-format", fmt)
                st, hdrs, _ = get(p.port, target, [b"X-Request-Id: " + rid])
                self.assertEqual((st, hdrs["x-request-id"]), (404, 'q"\\'))
                out = p.stop().decode("ascii")
                self.assertEqual(len(out.splitlines()), 1, out)
                if fmt == "text":
                    self.assertIn(' "GET /a\\x22b\\x5cc%20d\\x09\\xff HTTP/1.1" 404 ', out)
                    self.assertTrue(out.endswith(" - q\\x22\\x5c\n"), out)
                    self.assertEqual(len(out.split(" ")), 10)
                else:
                    self.assertIn('"target":"/a\\"b\\\\c%20d\\t\\ufffd"', out)
                    rec = json.loads(out)
                    self.assertEqual(rec["target"], '/a"b\\c%20d\t\ufffd')
                    self.assertEqual(rec["request_id"], 'q"\\')

    def test_reopen_on_sigusr1(self):
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "access.log")
            with serve("--access-log", path) as p:
                get(p.port, b"/healthz", [b"X-Request-Id: before"])
                os.rename(path, path + ".1")
                p.proc.send_signal(signal.SIGUSR1)
                self.assertTrue(th.wait_for(lambda: "reopened" in p.stderr_text(), 5))
                self.assertTrue(os.path.exists(path))  # created at once
                get(p.port, b"/healthz", [b"X-Request-Id: after"])
                self.assertEqual(get(p.port, b"/healthz")[0], 200)  # still running
            with open(path + ".1") as f:
                old = f.read().splitlines()
            with open(path) as f:
                new = f.read().splitlines()
            self.assertEqual([self.text_record(l)["request_id"] for l in old], ["before"])
            self.assertEqual(len(new), 2)
            self.assertEqual(self.text_record(new[0])["request_id"], "after")

    def test_sigusr1_with_stdout_or_off_and_sighup(self):
        for log in ("-", "off"):
            p = serve("--access-log", log)
            p.proc.send_signal(signal.SIGUSR1)
            p.proc.send_signal(signal.SIGHUP)
            time.sleep(0.3)
            self.assertIsNone(p.proc.poll())
            self.assertEqual(get(p.port, b"/healthz", [b"X-Request-Id: still"])[0], 200)
            out = p.stop()
            self.assertEqual(out.count(b" still\n"), 1 if log == "-" else 0)
            self.assertNotIn("reopen", p.stderr_text())

    def test_upstream_shares_it(self):
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "up.log")
            with th.Proc("upstream", "--profile", "fixed:0", "--access-log", path,
                         "--access-log-format", "json") as up:
                st, hdrs, n = get(up.port, b"/api/work", [b"X-Request-Id: up-1"])
                self.assertEqual((st, hdrs["x-request-id"]), (200, "up-1"))
                os.rename(path, path + ".1")
                up.proc.send_signal(signal.SIGUSR1)
                self.assertTrue(th.wait_for(lambda: "reopened" in up.stderr_text(), 5))
                get(up.port, b"/api/work")
            with open(path + ".1") as f:
                rec = json.loads(f.read())
            self.assertEqual((rec["target"], rec["status"], rec["bytes"], rec["request_id"]),
                             ("/api/work", 200, n, "up-1"))
            with open(path) as f:
                self.assertEqual(len(f.read().splitlines()), 1)


if __name__ == "__main__":
    watchdog = th.Watchdog(120 * th.SLOW)
    unittest.main(verbosity=2)
