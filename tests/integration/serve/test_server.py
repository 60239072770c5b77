"""Integration tests of the HTTP/1.1 server core through `tailcut serve` (issue 2).

Every test starts the real binary on 127.0.0.1 port 0, talks raw HTTP over sockets, and ends by
stopping it with SIGTERM and checking exit status 0 (under ASan a leak makes that fail).
"""
import os
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from tchelpers import Proc, connect, http_request, read_response, recv_all  # noqa: E402

SAN = os.environ.get("TC_SANITIZE") == "ON"


class ServerTest(unittest.TestCase):
    def start(self, *args):
        p = Proc("serve", "--workers", "2", *args)
        self.addCleanup(p.kill)
        return p

    def test_version_help_and_bad_flags(self):
        out = subprocess.run([Proc.bin(), "--version"], capture_output=True, text=True, timeout=10)
        self.assertEqual(out.returncode, 0)
        # The first line; the libraries' versions follow (test_version.py).
        self.assertRegex(out.stdout.splitlines()[0], r"^tailcut \d+\.\d+\.\d+$")
        out = subprocess.run([Proc.bin(), "serve", "--help"], capture_output=True, text=True,
                             timeout=10)
        self.assertEqual(out.returncode, 0)
        self.assertIn("--listen", out.stdout)
        for bad in (["--workers", "0"], ["--workers", "x"], ["--bogus"], ["--listen", "nope"],
                    ["--max-body", "-5"], ["--listen"]):
            out = subprocess.run([Proc.bin(), "serve", *bad], capture_output=True, text=True,
                                 timeout=10)
            self.assertEqual(out.returncode, 2, bad)
            lines = out.stderr.strip().splitlines()
            self.assertEqual(len(lines), 1, out.stderr)
            self.assertIn(bad[0].lstrip("-") if bad[0] != "--listen" else "listen", lines[0])
        out = subprocess.run([Proc.bin(), "frobnicate"], capture_output=True, text=True,
                             timeout=10)
        self.assertEqual(out.returncode, 2)

    def test_healthz_keepalive_and_headers(self):
        p = self.start()
        with connect(p.port, 5) as s:
            for _ in range(3):
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                st, hdrs, body = read_response(s)
                self.assertEqual(st, 200)
                self.assertEqual(body, b'{"status":"ok"}')
                self.assertEqual(hdrs["content-type"], "application/json")
                self.assertEqual(hdrs["content-length"], str(len(body)))
                self.assertEqual(hdrs["connection"], "keep-alive")
                self.assertRegex(hdrs["date"], r"^\w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d GMT$")
            # HEAD: same headers, no body
            s.sendall(b"HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            st, hdrs, body = read_response(s, head=True)
            self.assertEqual((st, body, hdrs["content-length"]), (200, b"", "15"))
            # Connection: close is honoured
            s.sendall(b"GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n")
            st, hdrs, _ = read_response(s)
            self.assertEqual(hdrs["connection"], "close")
            self.assertEqual(recv_all(s, 2), b"")
        p.stop()

    def test_http10(self):
        p = self.start()
        with connect(p.port, 5) as s:
            s.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
            st, hdrs, _ = read_response(s)
            self.assertEqual((st, hdrs["connection"]), (200, "close"))
            self.assertEqual(recv_all(s, 2), b"")
        with connect(p.port, 5) as s:
            for _ in range(2):
                s.sendall(b"GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
                st, hdrs, _ = read_response(s)
                self.assertEqual((st, hdrs["connection"]), (200, "keep-alive"))
        p.stop()

    def test_pipelining_in_order(self):
        p = self.start()
        paths = ["/healthz", "/nope", "/healthz", "/other"] * 10
        with connect(p.port, 5) as s:
            s.sendall(b"".join(b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % x.encode() for x in paths))
            for path in paths:
                st, _, body = read_response(s)
                self.assertEqual(st, 200 if path == "/healthz" else 404, path)
        p.stop()

    def test_errors(self):
        p = self.start("--max-body", "1000")
        cases = [
            (b"GARBAGE\r\n\r\n", 400, "bad_request"),
            (b"GET / HTTP/1.1\r\nBad Header\r\n\r\n", 400, "bad_request"),
            (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n", 414, "too_large"),
            (b"GET / HTTP/1.1\r\n" + b"X-A: " + b"b" * 17000 + b"\r\n\r\n", 431, "too_large"),
            (b"POST /healthz HTTP/1.1\r\nContent-Length: 2000\r\n\r\n", 413, "too_large"),
            (b"POST /healthz HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n800\r\n" + b"x" * 2048,
             413, "too_large"),
        ]
        for raw, status, code in cases:
            with connect(p.port, 5) as s:
                s.sendall(raw)
                st, hdrs, body = read_response(s)
                self.assertEqual(st, status, raw[:40])
                self.assertIn(b'"error":"%s"' % code.encode(), body)
                self.assertIn(b'"success":false', body)
                self.assertEqual(hdrs["connection"], "close")
                self.assertEqual(recv_all(s, 3), b"", "connection must close after %d" % status)
        st, hdrs, body = http_request(p.port, "DELETE", "/healthz")
        self.assertEqual(st, 405)
        self.assertIn("GET", hdrs["allow"])
        self.assertIn(b'"method_not_allowed"', body)
        st, _, body = http_request(p.port, "GET", "/no/such/path")
        self.assertEqual(st, 404)
        self.assertIn(b'"not_found"', body)
        # an earlier request in the pipeline is still answered before the 400
        with connect(p.port, 5) as s:
            s.sendall(b"GET /healthz HTTP/1.1\r\n\r\nBROKEN\r\n\r\n")
            self.assertEqual(read_response(s)[0], 200)
            self.assertEqual(read_response(s)[0], 400)
        p.stop()

    def test_slow_client_and_idle_close(self):
        p = self.start("--header-timeout", "700", "--idle-timeout", "1000")
        with connect(p.port, 5) as s:
            t0 = time.monotonic()
            s.sendall(b"GET /healthz HTTP/1.1\r\n")
            time.sleep(0.3)
            s.sendall(b"X-Slow: 1\r\n")  # still not complete
            st, hdrs, body = read_response(s)
            waited = time.monotonic() - t0
            self.assertEqual(st, 408)
            self.assertIn(b'"timeout"', body)
            self.assertGreaterEqual(waited, 0.6)
            self.assertLess(waited, 5)
            self.assertEqual(recv_all(s, 3), b"")
        with connect(p.port, 5) as s:
            s.sendall(b"GET /healthz HTTP/1.1\r\n\r\n")
            self.assertEqual(read_response(s)[0], 200)
            t0 = time.monotonic()
            self.assertEqual(recv_all(s, 5), b"")  # closed by the idle timer
            waited = time.monotonic() - t0
            self.assertGreaterEqual(waited, 0.9)
            self.assertLess(waited, 4)
        p.stop()

    def test_default_header_timeout_is_10s(self):
        p = self.start()
        with connect(p.port, 20) as s:
            t0 = time.monotonic()
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            st, _, _ = read_response(s)
            waited = time.monotonic() - t0
        self.assertEqual(st, 408)
        self.assertGreaterEqual(waited, 9.5)
        self.assertLess(waited, 13)
        p.stop()

    def test_max_connections(self):
        p = self.start("--max-connections", "5")
        held = [connect(p.port, 5) for _ in range(5)]
        for s in held:  # make sure all five are accepted and counted
            s.sendall(b"GET /healthz HTTP/1.1\r\n\r\n")
            self.assertEqual(read_response(s)[0], 200)
        with connect(p.port, 5) as s:
            t0 = time.monotonic()
            st, hdrs, body = read_response(s)
            self.assertLess(time.monotonic() - t0, 2)
            self.assertEqual(st, 503)
            self.assertIn(b'"overloaded"', body)
            self.assertIn("retry-after", hdrs)
        held.pop().close()
        time.sleep(0.3)
        st, _, _ = http_request(p.port, "GET", "/healthz")
        self.assertEqual(st, 200)
        for s in held:
            s.close()
        p.stop()

    def test_thousand_concurrent_connections(self):
        p = self.start()
        n = 1000
        sel = selectors.DefaultSelector()
        socks = []
        for _ in range(n):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", p.port))
            socks.append(s)
            sel.register(s, selectors.EVENT_WRITE, bytearray())
        done = 0
        deadline = time.monotonic() + 60
        while done < n and time.monotonic() < deadline:
            for key, ev in sel.select(timeout=1):
                s, buf = key.fileobj, key.data
                if ev & selectors.EVENT_WRITE:
                    s.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                    sel.modify(s, selectors.EVENT_READ, buf)
                    continue
                chunk = s.recv(4096)
                buf += chunk
                if buf.endswith(b'{"status":"ok"}') or not chunk:
                    sel.unregister(s)
                    done += 1
        ok = 0
        for s in socks:
            s.close()
        # every connection got a full 200 answer
        self.assertEqual(done, n)
        p.stop()

    def test_access_log(self):
        # The format itself is checked field by field in test_lifecycle.py.
        p = self.start()
        http_request(p.port, "GET", "/healthz")
        http_request(p.port, "GET", "/missing")
        out = p.stop()
        lines = [l.split() for l in out.decode().splitlines()]
        self.assertEqual(len(lines), 2, out)
        self.assertEqual(lines[0][1:6], ["127.0.0.1", '"GET', "/healthz", 'HTTP/1.1"', "200"])
        self.assertEqual(lines[1][1:6], ["127.0.0.1", '"GET', "/missing", 'HTTP/1.1"', "404"])
        self.assertRegex(lines[0][0], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
        self.assertGreater(int(lines[0][6]), 15)  # bytes incl. headers
        self.assertTrue(lines[0][7].isdigit())  # microseconds
        p = self.start("--access-log", "off")
        http_request(p.port, "GET", "/healthz")
        self.assertEqual(p.stop(), b"")

    def test_drain_on_sigterm_loses_nothing(self):
        p = self.start()
        results = []
        lock = threading.Lock()
        stop = threading.Event()

        def client():
            try:
                s = connect(p.port, 5)
            except OSError:
                return
            with s:
                while not stop.is_set():
                    try:
                        s.sendall(b"GET /healthz HTTP/1.1\r\n\r\n")
                    except OSError:
                        return  # closed before we sent: not a lost answer
                    try:
                        st, hdrs, body = read_response(s)
                    except ConnectionError as e:
                        with lock:
                            results.append(("reset", str(e)))
                        return
                    except EOFError:
                        return  # closed while idle, before our request was read
                    with lock:
                        results.append((st, body))
                    if hdrs.get("connection") == "close":
                        return

        threads = [threading.Thread(target=client) for _ in range(50)]
        for t in threads:
            t.start()
        time.sleep(0.5)
        p.proc.send_signal(signal.SIGTERM)
        t0 = time.monotonic()
        rc = p.proc.wait(timeout=30)
        stop.set()
        for t in threads:
            t.join(10)
        self.assertEqual(rc, 0, p.stderr_text())
        self.assertLess(time.monotonic() - t0, 5)
        self.assertGreater(len(results), 50)
        for st, body in results:
            self.assertIn(st, (200, 503), body)
            if st == 200:
                self.assertEqual(body, b'{"status":"ok"}')
            else:
                self.assertIn(b'"shutting_down"', body)


if __name__ == "__main__":
    unittest.main(verbosity=2)
