#!/usr/bin/env python3
"""`kind: proxy` routes (CONTRACT section 8, docs/proxy.md): the transparent hedging proxy seen
from both sides. Recording upstreams (raw sockets: loopback, port 0) keep what each request
brought (method, target, header fields in order, body and its framing) and answer as the
client's X-Script header says (the proxy passes it on like any end-to-end header).

Every rule of the proxy: methods and bodies of every framing, hop-by-hop headers both ways, query
bytes, path rules (strip_prefix, dot segments 400), X-Forwarded-*, Host, X-Request-Id,
X-Tailcut-Attempt, X-Tailcut-Timeout-Ms, the winner and the cancelled loser, POST not hedged
(counted), Idempotency-Key, failure statuses and the last failed response passed on, a 20 MB body
streamed before the upstream ends it, a stalled body cut visibly, HEAD/204/304, an HTTP/1.0 client
(close-delimited), 499 (the upstream sees its connection closed), 413, 501 Upgrade, 100-continue,
504 and the deadline header; and (BoundedMemoryTest, a process of its own) a 64 MiB response
to a client that stops reading, which tailcut must hold back rather than buffer.

Timing: bounds are generous (stretched under sanitizers by th.SLOW) and nothing asserts speed.
"""
import hashlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import tchelpers as th  # noqa: E402

S = th.SLOW
BIG = 20 * 1024 * 1024


class Conn:
    """One upstream connection: buffered reads of heads and bodies."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = bytearray()

    def fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise EOFError
        self.buf += chunk

    def until(self, sep, limit=1 << 20):
        while sep not in self.buf:
            if len(self.buf) > limit:
                raise ValueError("too long")
            self.fill()
        i = self.buf.index(sep)
        out = bytes(self.buf[:i])
        del self.buf[:i + len(sep)]
        return out

    def exact(self, n):
        while len(self.buf) < n:
            self.fill()
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def send(self, data):
        self.sock.sendall(data if isinstance(data, bytes) else data.encode())

    def closed_within(self, seconds):
        """Waits for the peer to close or reset (the time it did, or None after seconds)."""
        self.sock.settimeout(0.05)
        end = time.monotonic() + seconds
        try:
            while time.monotonic() < end:
                try:
                    if not self.sock.recv(65536):
                        return time.monotonic()
                except socket.timeout:
                    continue
                except OSError:
                    return time.monotonic()
            return None
        finally:
            self.sock.settimeout(30 * S)


def header(rec, name):
    for k, v in rec["fields"]:
        if k.lower() == name.lower():
            return v
    return None


# Scripts that answer with fixed bytes and keep the connection.
FIXED = {
    "head": b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\nX-H: 1\r\n\r\n",
    "204": b"HTTP/1.1 204 No Content\r\nX-H: 1\r\n\r\n",
    "304": b"HTTP/1.1 304 Not Modified\r\nETag: \"e\"\r\n\r\n",
    "continue": b"HTTP/1.1 100 Continue\r\n\r\n"
                b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok",
    "chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
}


def respond(c, status, body=b"", headers=(), reason="R"):
    head = "HTTP/1.1 %d %s\r\nContent-Length: %d\r\n" % (status, reason, len(body))
    head += "".join("%s: %s\r\n" % kv for kv in headers)
    c.send(head.encode() + b"\r\n" + body)


class Upstream:
    """A recording upstream on a free loopback port: each request's record is kept, then the
    script its X-Script header names (a method s_NAME of the test class) answers it."""

    def __init__(self, name, scripts):
        self.name = name
        self.scripts = scripts
        self.records = []
        self.lock = threading.Lock()
        self.ls = socket.socket()
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(64)
        self.port = self.ls.getsockname()[1]
        self.open = []
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, path=""):
        return "http://127.0.0.1:%d%s" % (self.port, path)

    def _accept(self):
        while True:
            try:
                s, _ = self.ls.accept()
            except OSError:
                return
            self.open.append(s)
            threading.Thread(target=self._serve, args=(s,), daemon=True).start()

    def _serve(self, s):
        s.settimeout(30 * S)
        c = Conn(s)
        try:
            while True:
                rec = self._read(c)
                if rec is None:
                    return
                with self.lock:
                    self.records.append(rec)
                script = header(rec, "X-Script") or "echo"
                if script in FIXED:
                    c.send(FIXED[script])
                elif not getattr(self.scripts, "s_" + script)(c, rec):
                    return
        except (EOFError, OSError, ValueError):
            return
        finally:
            s.close()

    def _read(self, c):
        try:
            head = c.until(b"\r\n\r\n")
        except EOFError:
            return None
        lines = head.decode("latin-1").split("\r\n")
        method, target, version = lines[0].split(" ")
        fields = [tuple(x.strip() for x in line.split(":", 1)) for line in lines[1:]]
        rec = {"server": self.name, "method": method, "target": target, "version": version,
               "fields": fields, "at": time.monotonic(), "conn": c}
        te = header(rec, "Transfer-Encoding")
        cl = header(rec, "Content-Length")
        body = bytearray()
        if te is not None and te.lower() == "chunked":
            rec["framing"] = "chunked"
            while True:
                size = int(c.until(b"\r\n").split(b";")[0], 16)
                if size == 0:
                    c.until(b"\r\n")  # no trailers: the final CRLF
                    break
                body += c.exact(size + 2)[:size]
        elif cl is not None:
            rec["framing"] = "length"
            body += c.exact(int(cl))
        else:
            rec["framing"] = "none"
        rec["body"] = bytes(body)
        return rec

    def take(self):
        with self.lock:
            out, self.records = self.records, []
        return out

    def close(self):
        self.ls.close()
        for s in self.open:
            try:
                s.close()
            except OSError:
                pass


def request(port, method, path, body=None, headers=(), version="HTTP/1.1", chunks=None):
    """A request on a fresh connection as raw bytes (headers: pairs, in order, repeats allowed).
    Returns (status, headers, body)."""
    with th.connect(port, 30 * S) as s:
        raw = "%s %s %s\r\nHost: client.example\r\n" % (method, path, version)
        raw += "".join("%s: %s\r\n" % kv for kv in headers)
        if body is not None:
            raw += "Content-Length: %d\r\n" % len(body)
        if chunks is not None:
            raw += "Transfer-Encoding: chunked\r\n"
        if version == "HTTP/1.1":
            raw += "Connection: close\r\n"
        s.sendall(raw.encode() + b"\r\n" + (body or b""))
        for ch in chunks or ():
            s.sendall(b"%x\r\n%s\r\n" % (len(ch), ch))
        if chunks is not None:
            s.sendall(b"0\r\n\r\n")
        return th.read_response(s, head=(method == "HEAD"))


class ProxyTest(unittest.TestCase):
    # ---- the scripts: how the upstreams answer (True: keep the connection) -------------------

    @staticmethod
    def s_echo(c, rec):
        body = json.dumps({"server": rec["server"], "method": rec["method"],
                           "target": rec["target"], "fields": rec["fields"],
                           "framing": rec["framing"], "body": rec["body"].decode("latin-1")})
        respond(c, 200, body.encode(), [("Content-Type", "application/json")])
        return True

    @staticmethod
    def s_hop(c, rec):
        respond(c, 200, b"ok", [("Connection", "X-Secret"), ("X-Secret", "1"),
                                ("Keep-Alive", "timeout=5"), ("Proxy-Authenticate", "Basic"),
                                ("Trailer", "X-T"), ("X-Kept", "yes")])
        return True

    @staticmethod
    def s_stall(c, rec):
        """No answer: waits for the proxy to close the connection (the time is recorded)."""
        rec["closed_at"] = c.closed_within(10 * S)
        if rec["closed_at"] is None:
            respond(c, 200, b"late")
        return False

    @classmethod
    def s_first_stalls(cls, c, rec):
        if header(rec, "X-Tailcut-Attempt") == "1":
            return cls.s_stall(c, rec)
        respond(c, 200, ("from " + rec["server"]).encode())
        return True

    @staticmethod
    def s_first_fails(c, rec):
        if header(rec, "X-Tailcut-Attempt") == "1":
            respond(c, 503, b"busy")
        else:
            respond(c, 200, b"second")
        return True

    @staticmethod
    def s_fail(c, rec):
        n = header(rec, "X-Tailcut-Attempt")
        respond(c, 503, ("failed " + n).encode(), [("X-Why", "busy-" + n), ("Retry-After", "1")])
        return True

    @staticmethod
    def s_fail_big(c, rec):
        respond(c, 500, b"x" * (70 * 1024))
        return True

    @staticmethod
    def s_teapot(c, rec):
        respond(c, 418, b"teapot")
        return True

    @staticmethod
    def s_notfound(c, rec):
        respond(c, 404, b"no such item")
        return True

    @classmethod
    def s_big(cls, c, rec):
        """20 MB with Content-Length; the last MiB only once the test saw the client get bytes."""
        c.send("HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % BIG)
        piece = bytes(range(256)) * 4096  # 1 MiB
        for _ in range(BIG // len(piece) - 1):
            c.send(piece)
        cls.big_waited = cls.client_got.wait(20 * S)
        c.send(piece)
        return True

    @staticmethod
    def s_cut_chunked(c, rec):
        c.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        c.closed_within(5 * S)
        return False

    @staticmethod
    def s_cut_length(c, rec):
        c.send(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nhello")
        c.closed_within(5 * S)
        return False

    # ---- the process ---------------------------------------------------------------------------

    @classmethod
    def setUpClass(cls):
        cls.dog = th.Watchdog(300 * S)
        cls.tmp = tempfile.TemporaryDirectory(prefix="tailcut-proxy-")
        cls.client_got = threading.Event()
        cls.big_waited = None
        cls.a = Upstream("A", cls)
        cls.b = Upstream("B", cls)
        conf = """\
access_log: "-"
access_log_format: json
workers: 1
routes:
  - prefix: /p/
    kind: proxy
    name: plain
    upstreams: [{a}/base/]
    hedge: {{delay: 100, extra: 1, budget_percent: off}}
    timeout_ms: 3000
  - prefix: /h/
    kind: proxy
    name: hedged
    upstreams: [{a}, {b}]
    hedge: {{delay: 100, extra: 1, budget_percent: off}}
    hedge_idempotency_key: true
    upstream_headers: ["X-Env: test"]
  - prefix: /s
    kind: proxy
    name: strict
    upstreams: [{a}/base/]
    strip_prefix: true
    preserve_host: true
    failure_statuses: [503, 418]
    body_idle_timeout_ms: 300
    max_request_body_bytes: 1000
    max_timeout_ms: 5000
    timeout_ms: 1500
    hedge: {{delay: 100, extra: 1, budget_percent: off}}
""".format(a=cls.a.url(), b=cls.b.url())
        path = os.path.join(cls.tmp.name, "proxy.yaml")
        with open(path, "w") as f:
            f.write(conf)
        cls.tc = th.Proc("serve", "--config", path)
        cls.port = cls.tc.port

    @classmethod
    def tearDownClass(cls):
        try:
            out = cls.tc.stop(timeout=30 * S)
            cls.check_log(out)
        finally:
            cls.a.close()
            cls.b.close()
            cls.tmp.cleanup()
            cls.dog.cancel()

    @classmethod
    def check_log(cls, out):
        lines = [json.loads(x) for x in out.decode().splitlines() if x.startswith("{")]
        gone = [x for x in lines if x["target"] == "/h/gone"]
        assert len(gone) == 1 and gone[0]["status"] == 499, gone
        assert gone[0]["route"] == "hedged", gone
        plain = [x for x in lines if x["target"] == "/p/x?q=1"]
        assert plain and plain[0]["status"] == 200 and plain[0]["route"] == "plain", plain

    def setUp(self):
        self.a.take()
        self.b.take()

    def records(self, n=1, wait=5):
        """The upstreams' records once there are at least n (in arrival order)."""
        end = time.monotonic() + wait * S
        while True:
            with self.a.lock, self.b.lock:
                got = sorted(self.a.records + self.b.records, key=lambda r: r["at"])
            if len(got) >= n or time.monotonic() >= end:
                return got
            time.sleep(0.01)

    def metrics(self):
        st, _, body = th.http_request(self.port, "GET", "/metrics", timeout=10 * S)
        self.assertEqual(st, 200)
        return th.parse_metrics(body.decode())

    # ---- methods, bodies, framing --------------------------------------------------------------

    def test_methods_and_bodies(self):
        st, _, body = request(self.port, "GET", "/p/get")
        self.assertEqual(st, 200)
        echo = json.loads(body)
        self.assertEqual((echo["method"], echo["target"], echo["framing"], echo["body"]),
                         ("GET", "/base/p/get", "none", ""))
        st, _, body = request(self.port, "POST", "/p/post", body=b"a=1&b=\x00\xff")
        echo = json.loads(body)
        self.assertEqual((st, echo["method"], echo["framing"], echo["body"]),
                         (200, "POST", "length", "a=1&b=\x00\xff"))
        self.assertEqual(header({"fields": echo["fields"]}, "Content-Length"), "8")
        # a chunked body goes on chunked (its length is not known), byte for byte
        st, _, body = request(self.port, "PUT", "/p/put", chunks=[b"abc", b"defgh"])
        echo = json.loads(body)
        self.assertEqual((st, echo["method"], echo["framing"], echo["body"]),
                         (200, "PUT", "chunked", "abcdefgh"))
        for method in ("DELETE", "PATCH", "OPTIONS", "PROPFIND"):
            st, _, body = request(self.port, method, "/p/m", body=b"zz")
            echo = json.loads(body)
            self.assertEqual((st, echo["method"], echo["body"]), (200, method, "zz"))

    # ---- headers ---------------------------------------------------------------------------------

    def test_request_headers(self):
        st, hdrs, body = request(self.port, "GET", "/h/x", headers=[
            ("Connection", "X-Drop, keep-alive"), ("X-Drop", "1"), ("Keep-Alive", "300"),
            ("TE", "trailers"), ("Trailer", "X-T"), ("Proxy-Authorization", "Basic eA=="),
            ("Proxy-Connection", "keep-alive"), ("X-Forwarded-For", "203.0.113.7"),
            ("X-Forwarded-Proto", "https"), ("X-Forwarded-Host", "evil.example"),
            ("X-Tailcut-Attempt", "9"), ("X-Tailcut-Secret", "s"), ("X-Env", "prod"),
            ("X-Request-Id", "req-42"), ("X-Kept", "a"), ("X-Kept", "b"),
            ("Authorization", "Bearer t")])
        self.assertEqual(st, 200)
        echo = json.loads(body)
        fields = [(k.lower(), v) for k, v in echo["fields"]]
        names = [k for k, _ in fields]
        for gone in ("x-drop", "keep-alive", "te", "trailer", "proxy-authorization",
                     "proxy-connection", "x-tailcut-secret"):
            self.assertNotIn(gone, names)
        self.assertEqual([k for k, v in fields if "X-Drop" in v], [])  # the client's Connection
        one = {k: v for k, v in fields}
        self.assertEqual(names.count("x-forwarded-for"), 1)
        self.assertEqual(one["x-forwarded-for"], "203.0.113.7, 127.0.0.1")
        self.assertEqual(one["x-forwarded-proto"], "http")
        self.assertEqual(one["x-forwarded-host"], "client.example")
        self.assertEqual(one["host"], "127.0.0.1:%d" % (self.a.port if echo["server"] == "A"
                                                        else self.b.port))
        self.assertEqual([v for k, v in fields if k == "x-tailcut-attempt"], ["1"])
        self.assertEqual([v for k, v in fields if k == "x-env"], ["test"])
        self.assertEqual([v for k, v in fields if k == "x-request-id"], ["req-42"])
        self.assertEqual([v for k, v in fields if k == "x-kept"], ["a", "b"])
        self.assertEqual(one["authorization"], "Bearer t")
        self.assertEqual(hdrs["x-request-id"], "req-42")
        self.assertEqual(hdrs["x-tailcut-attempts"], "1")
        # preserve_host keeps the client's Host
        st, _, body = request(self.port, "GET", "/s/x")
        self.assertEqual(st, 200)
        self.assertEqual(header(json.loads(body), "Host"), "client.example")

    def test_response_headers(self):
        st, hdrs, body = request(self.port, "GET", "/p/x", headers=[("X-Script", "hop")])
        self.assertEqual((st, body), (200, b"ok"))
        for gone in ("x-secret", "keep-alive", "proxy-authenticate", "trailer"):
            self.assertNotIn(gone, hdrs)
        self.assertEqual(hdrs["x-kept"], "yes")
        self.assertEqual(hdrs["x-tailcut-attempts"], "1")
        self.assertEqual(len(hdrs["x-request-id"]), 32)

    # ---- paths and queries -----------------------------------------------------------------------

    def test_paths_and_query(self):
        st, _, body = request(self.port, "GET", "/p/x?q=1")
        self.assertEqual((st, json.loads(body)["target"]), (200, "/base/p/x?q=1"))
        st, _, body = request(self.port, "GET", "/p/a%2Fb?x=%2F&y=a+b&&z=%zz#")
        self.assertEqual(json.loads(body)["target"], "/base/p/a%2Fb?x=%2F&y=a+b&&z=%zz")
        # strip_prefix: the prefix (without a trailing /) off the front
        st, _, body = request(self.port, "GET", "/s/x/y?k=v")
        self.assertEqual(json.loads(body)["target"], "/base/x/y?k=v")
        st, _, body = request(self.port, "GET", "/s")
        self.assertEqual(json.loads(body)["target"], "/base/")
        st, _, body = request(self.port, "GET", "/s?k")
        self.assertEqual(json.loads(body)["target"], "/base/?k")
        # the replica's own path, no double slash
        st, _, body = request(self.port, "GET", "/h/y")
        self.assertEqual(json.loads(body)["target"], "/h/y")
        for bad in ("/p/./x", "/p/../x", "/p/a/%2e%2E/x", "/p/a/..", "/p/%2E/x", "/p/a/.%2e"):
            with self.subTest(path=bad):
                st, _, body = request(self.port, "GET", bad)
                self.assertEqual(st, 400)
                self.assertEqual(json.loads(body)["error"], "bad_request")
        self.assertEqual(len(self.a.take()) + len(self.b.take()), 6)  # no dot path went on

    # ---- hedging ---------------------------------------------------------------------------------

    def test_hedged_get_wins_on_another_replica(self):
        t0 = time.monotonic()
        st, hdrs, body = request(self.port, "GET", "/h/w", headers=[("X-Script", "first_stalls")])
        self.assertEqual(st, 200)
        self.assertEqual(hdrs["x-tailcut-attempts"], "2")
        recs = self.records(2)
        first = [r for r in recs if header(r, "X-Tailcut-Attempt") == "1"][0]
        second = [r for r in recs if header(r, "X-Tailcut-Attempt") == "2"][0]
        self.assertEqual(body, ("from " + second["server"]).encode())
        self.assertNotEqual(first["server"], second["server"])
        self.assertGreaterEqual(second["at"] - first["at"], 0.08)
        # the loser is cancelled at the winner's head: its connection closes at once
        end = time.monotonic() + 5 * S
        while "closed_at" not in first and time.monotonic() < end:
            time.sleep(0.01)
        self.assertIsNotNone(first.get("closed_at"))
        self.assertLess(first["closed_at"] - t0, 5 * S)

    def test_post_not_hedged(self):
        m0 = th.metric(self.metrics(), "tailcut_proxy_unhedged_total", route="hedged",
                       reason="method")
        st, hdrs, body = request(self.port, "POST", "/h/once", body=b"pay",
                                 headers=[("X-Script", "first_stalls"),
                                          ("X-Tailcut-Timeout-Ms", "700")])
        self.assertEqual(st, 504)  # one attempt, which stalled past the deadline
        self.assertEqual(hdrs["x-tailcut-attempts"], "1")
        self.assertEqual(len(self.records(1)), 1)
        m1 = th.metric(self.metrics(), "tailcut_proxy_unhedged_total", route="hedged",
                       reason="method")
        self.assertEqual(m1 - m0, 1)
        # a body over body_replay_limit_bytes: sent once too, counted as body_too_large
        b0 = th.metric(self.metrics(), "tailcut_proxy_unhedged_total", route="hedged",
                       reason="body_too_large")
        big = b"b" * 70000
        st, hdrs, body = request(self.port, "PUT", "/h/big", body=big,
                                 headers=[("Idempotency-Key", "k1")])
        self.assertEqual((st, json.loads(body)["body"] == big.decode()), (200, True))
        b1 = th.metric(self.metrics(), "tailcut_proxy_unhedged_total", route="hedged",
                       reason="body_too_large")
        self.assertEqual(b1 - b0, 1)

    def test_idempotency_key_hedges(self):
        st, hdrs, body = request(self.port, "POST", "/h/idem", body=b"once",
                                 headers=[("X-Script", "first_stalls"),
                                          ("Idempotency-Key", "abc")])
        self.assertEqual((st, hdrs["x-tailcut-attempts"]), (200, "2"))
        recs = self.records(2)
        self.assertEqual([r["body"] for r in recs], [b"once", b"once"])
        self.assertEqual([header(r, "Idempotency-Key") for r in recs], ["abc", "abc"])

    # ---- failures --------------------------------------------------------------------------------

    def test_failure_statuses(self):
        st, hdrs, body = request(self.port, "GET", "/h/f", headers=[("X-Script", "first_fails")])
        self.assertEqual((st, body, hdrs["x-tailcut-attempts"]), (200, b"second", "2"))
        # every attempt fails: the last failed response, whole
        st, hdrs, body = request(self.port, "GET", "/h/f", headers=[("X-Script", "fail")])
        self.assertEqual((st, body, hdrs["x-why"], hdrs["x-tailcut-attempts"]),
                         (503, b"failed 2", "busy-2", "2"))
        self.assertEqual(hdrs["retry-after"], "1")
        # its body over 64 KiB: 502
        st, hdrs, body = request(self.port, "GET", "/h/f", headers=[("X-Script", "fail_big")])
        self.assertEqual((st, json.loads(body)["error"]), (502, "upstream_failed"))
        # the body adds "attempts":N, as every 502 upstream_failed does (CONTRACT section 1)
        n = int(hdrs["x-tailcut-attempts"])
        self.assertEqual(json.loads(body), {"success": False, "error": "upstream_failed",
                                            "message": "every upstream attempt failed",
                                            "attempts": n})
        self.assertEqual(hdrs["content-type"], "application/json")
        # a 404 is the upstream's answer; on the strict route 418 is a failure
        st, hdrs, body = request(self.port, "GET", "/h/f", headers=[("X-Script", "notfound")])
        self.assertEqual((st, body, hdrs["x-tailcut-attempts"]), (404, b"no such item", "1"))
        st, hdrs, body = request(self.port, "GET", "/s/f", headers=[("X-Script", "teapot")])
        self.assertEqual((st, body, hdrs["x-tailcut-attempts"]), (418, b"teapot", "2"))

    def test_deadline_and_504(self):
        t0 = time.monotonic()
        st, hdrs, body = request(self.port, "GET", "/s/slow",
                                 headers=[("X-Script", "stall"), ("X-Tailcut-Timeout-Ms", "400")])
        took = time.monotonic() - t0
        self.assertEqual((st, json.loads(body)["error"]), (504, "timeout"))
        self.assertGreaterEqual(took, 0.38)
        self.assertLess(took, 4 * S)
        recs = self.records(2)
        sent = [int(header(r, "X-Tailcut-Timeout-Ms")) for r in recs]
        self.assertTrue(300 <= sent[0] <= 400, sent)
        self.assertTrue(1 <= sent[1] < sent[0], sent)  # the hedge, 100 ms later
        # the route's timeout_ms without the header
        st, _, body = request(self.port, "GET", "/s/x")
        self.assertEqual(int(header(json.loads(body), "X-Tailcut-Timeout-Ms")) <= 1500, True)
        for bad in ("0", "5001", "abc", "-1"):
            st, _, body = request(self.port, "GET", "/s/x", headers=[("X-Tailcut-Timeout-Ms", bad)])
            self.assertEqual((st, json.loads(body)["error"]), (400, "bad_request"))
        # given twice, even with the same value: 400, as a repeated `timeout` parameter is
        self.a.take()
        st, _, body = request(self.port, "GET", "/s/x", headers=[("X-Tailcut-Timeout-Ms", "900"),
                                                                 ("X-Tailcut-Timeout-Ms", "900")])
        self.assertEqual((st, json.loads(body)["error"]), (400, "bad_request"))
        self.assertEqual(self.records(0, wait=0), [])

    # ---- streaming -------------------------------------------------------------------------------

    def test_big_body_streamed(self):
        self.__class__.client_got.clear()
        with th.connect(self.port, 60 * S) as s:
            s.sendall(b"GET /p/big HTTP/1.1\r\nHost: h\r\nX-Script: big\r\nConnection: close\r\n\r\n")
            buf = bytearray()
            while b"\r\n\r\n" not in buf:
                buf += s.recv(65536)
            head, _, rest = bytes(buf).partition(b"\r\n\r\n")
            st, hdrs = th.parse_head(head)
            self.assertEqual((st, hdrs["content-length"]), (200, str(BIG)))
            got = bytearray(rest)
            digest = hashlib.sha256()
            while len(got) < (1 << 20):
                got += s.recv(1 << 20)
            self.__class__.client_got.set()  # bytes came before the upstream sent its end
            n = len(got)
            digest.update(got)
            while n < BIG:
                chunk = s.recv(1 << 20)
                if not chunk:
                    break
                n += len(chunk)
                digest.update(chunk)
        self.assertEqual(n, BIG)
        piece = bytes(range(256)) * 4096
        want = hashlib.sha256(piece * (BIG // len(piece))).hexdigest()
        self.assertEqual(digest.hexdigest(), want)
        self.assertTrue(self.__class__.big_waited)

    def test_chunked_and_http10(self):
        st, hdrs, body = request(self.port, "GET", "/p/c", headers=[("X-Script", "chunked")])
        self.assertEqual((st, hdrs.get("transfer-encoding"), body), (200, "chunked", b"hello world"))
        with th.connect(self.port, 30 * S) as s:
            s.sendall(b"GET /p/c HTTP/1.0\r\nHost: h\r\nX-Script: chunked\r\n\r\n")
            raw = th.recv_all(s, 10 * S)
        head, _, body = raw.partition(b"\r\n\r\n")
        st, hdrs = th.parse_head(head)
        self.assertEqual((st, body), (200, b"hello world"))  # ends at the close
        self.assertNotIn("transfer-encoding", hdrs)
        self.assertNotIn("content-length", hdrs)

    def test_stalled_body_cut(self):
        with th.connect(self.port, 30 * S) as s:
            s.sendall(b"GET /s/cut HTTP/1.1\r\nHost: h\r\nX-Script: cut_chunked\r\n\r\n")
            t0 = time.monotonic()
            raw = th.recv_all(s, 10 * S)
        self.assertLess(time.monotonic() - t0, 5 * S)
        self.assertIn(b"Transfer-Encoding: chunked", raw)
        self.assertTrue(raw.endswith(b"5\r\nhello\r\n"), raw)  # no final chunk: closed
        with th.connect(self.port, 30 * S) as s:
            s.sendall(b"GET /s/cut HTTP/1.1\r\nHost: h\r\nX-Script: cut_length\r\n\r\n")
            raw = th.recv_all(s, 10 * S)
        self.assertIn(b"Content-Length: 100", raw)
        self.assertTrue(raw.endswith(b"\r\n\r\nhello"), raw)  # short, then closed

    def test_head_204_304(self):
        with th.connect(self.port, 30 * S) as s:
            for method, script, status in (("HEAD", "head", 200), ("GET", "204", 204),
                                           ("GET", "304", 304), ("GET", "echo", 200)):
                s.sendall(("%s /p/n HTTP/1.1\r\nHost: h\r\nX-Script: %s\r\n\r\n"
                           % (method, script)).encode())
                st, hdrs, body = th.read_response(s, head=(method == "HEAD"))
                self.assertEqual((st, body if st != 200 or method == "HEAD" else b""),
                                 (status, b""))
                if method == "HEAD":
                    self.assertEqual(hdrs["content-length"], "1234")
                if status == 304:
                    self.assertEqual(hdrs["etag"], '"e"')
                if status in (204, 304):
                    self.assertNotIn("transfer-encoding", hdrs)
        # the last answer came on the same connection: every framing was right

    # ---- the client's side -----------------------------------------------------------------------

    def test_client_leaves_499(self):
        with th.connect(self.port, 30 * S) as s:
            s.sendall(b"GET /h/gone HTTP/1.1\r\nHost: h\r\nX-Script: stall\r\n\r\n")
            recs = self.records(2)  # the first attempt and the hedge's, 100 ms later
            self.assertEqual(len(recs), 2)
        t0 = time.monotonic()
        end = t0 + 5 * S
        while time.monotonic() < end and not all("closed_at" in r for r in self.records(1, 0)):
            time.sleep(0.01)
        for r in self.records(2, 0):
            self.assertIsNotNone(r.get("closed_at"), r["server"])
            self.assertLess(r["closed_at"] - t0, 5 * S)

    def test_413(self):
        st, _, body = request(self.port, "POST", "/s/up", body=b"x" * 1001)
        self.assertEqual((st, json.loads(body)["error"]), (413, "too_large"))
        self.assertEqual(self.records(1, 0.3), [])
        st, _, body = request(self.port, "POST", "/s/up", chunks=[b"x" * 600, b"y" * 600])
        self.assertEqual((st, json.loads(body)["error"]), (413, "too_large"))
        st, _, body = request(self.port, "POST", "/s/up", body=b"x" * 1000)
        self.assertEqual(st, 200)

    def test_upgrade_501(self):
        st, _, body = request(self.port, "GET", "/p/ws", headers=[
            ("Connection", "Upgrade"), ("Upgrade", "websocket")])
        self.assertEqual((st, json.loads(body)["error"]), (501, "not_implemented"))
        self.assertEqual(self.records(1, 0.3), [])

    def test_100_continue(self):
        with th.connect(self.port, 30 * S) as s:
            s.sendall(b"POST /p/c HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n"
                      b"Expect: 100-continue\r\n\r\n")
            got = b""
            while b"\r\n\r\n" not in got:
                got += s.recv(4096)
            self.assertTrue(got.startswith(b"HTTP/1.1 100 Continue\r\n"), got)
            s.sendall(b"hello")
            s._tc_buf = got.partition(b"\r\n\r\n")[2]
            st, _, body = th.read_response(s)
        echo = json.loads(body)
        self.assertEqual((st, echo["body"]), (200, "hello"))
        self.assertIsNone(header(echo, "Expect"))
        # an upstream's 100 Continue is skipped
        st, _, body = request(self.port, "POST", "/p/c", body=b"z",
                              headers=[("X-Script", "continue")])
        self.assertEqual((st, body), (201, b"ok"))

    # ---- the proxy's keys ------------------------------------------------------------------------

    def check(self, text):
        """serve --config (a file of text) --check: (exit status, stderr with the file as F)."""
        path = os.path.join(self.tmp.name, "check.yaml")
        with open(path, "w") as f:
            f.write(text)
        p = subprocess.run([th.Proc.bin(), "serve", "--config", path, "--check"],
                           capture_output=True, timeout=30 * S)
        return p.returncode, p.stderr.decode().replace(path, "F")

    def test_keys_checked(self):
        route = "routes:\n  - prefix: /p/\n    kind: proxy\n    upstreams: [http://x]\n"
        cases = [
            ("    failure_statuses: [503, 99]\n",
             "F:5:29: routes[0].failure_statuses[1]: must be 100 to 599"),
            ("    hedge_methods: [GET, \"P T\"]\n",
             "F:5:26: routes[0].hedge_methods[1]: must be a method name (a token)"),
            ("    strip_prefix: yes\n", "F:5:19: routes[0].strip_prefix: expected true or false"),
            ("    body_idle_timeout_ms: 0\n",
             "F:5:27: routes[0].body_idle_timeout_ms: must be 1 to 3600000"),
        ]
        for text, want in cases:
            with self.subTest(want=want):
                rc, err = self.check(route + text)
                self.assertEqual(rc, 2, err)
                self.assertTrue(err.startswith("tailcut: " + want), err)
        rc, err = self.check("routes:\n  - {prefix: /a/, kind: api, upstreams: [http://x/w], "
                             "strip_prefix: true}\n")
        self.assertEqual(rc, 2)
        self.assertIn("strip_prefix: unknown key for this kind of route", err)
        rc, err = self.check(route + "    hedge_methods: [GET, PUT]\n    failure_statuses: [500]\n"
                             "    strip_prefix: true\n    max_request_body_bytes: 0\n")
        self.assertEqual((rc, err), (0, "tailcut: configuration ok: 1 route\n"))

HUGE = 64 * 1024 * 1024
# What tailcut may add to its peak RSS while it passes HUGE bytes to a client that stops reading:
# its bounded buffers (a read's worth held, SERVE_PROXY_WRITE_HIGH unwritten) are well under a
# MiB; the rest is slack for the allocator. A proxy that buffered the body would add ~64 MiB.
HUGE_GROWTH_BOUND_KB = 16 * 1024


def proc_status_kb(pid, key):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            k, _, v = line.partition(":")
            if k == key:
                return int(v.split()[0])
    raise KeyError(key)


class BoundedMemoryTest(unittest.TestCase):
    """A 64 MiB response streamed to a client that reads nothing for a while, then slowly: the
    upstream can send far faster than the client takes, so only back-pressure keeps tailcut's
    memory bounded. Its own process, so that its VmHWM is this transfer's alone."""

    @staticmethod
    def s_huge(c, rec):
        c.send("HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % HUGE)
        piece = bytes(range(256)) * 4096  # 1 MiB
        for _ in range(HUGE // len(piece)):
            c.send(piece)  # blocks while tailcut does not read: that is the point
        return True

    @classmethod
    def setUpClass(cls):
        cls.dog = th.Watchdog(300 * S)
        cls.tmp = tempfile.TemporaryDirectory(prefix="tailcut-proxy-mem-")
        cls.up = Upstream("U", cls)
        path = os.path.join(cls.tmp.name, "proxy.yaml")
        with open(path, "w") as f:
            f.write("access_log: off\nworkers: 1\nroutes:\n  - prefix: /m/\n    kind: proxy\n"
                    "    upstreams: [%s]\n" % cls.up.url())
        cls.tc = th.Proc("serve", "--config", path)

    @classmethod
    def tearDownClass(cls):
        try:
            cls.tc.stop(timeout=30 * S)
        finally:
            cls.up.close()
            cls.tmp.cleanup()
            cls.dog.cancel()

    def test_slow_client_bounded_memory(self):
        pid = self.tc.proc.pid
        st, _, body = request(self.tc.port, "GET", "/m/warm", headers=[("X-Script", "chunked")])
        self.assertEqual(st, 200, body)
        base = proc_status_kb(pid, "VmHWM")
        with th.connect(self.tc.port, 60 * S) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
            s.sendall(b"GET /m/huge HTTP/1.1\r\nHost: h\r\nX-Script: huge\r\n"
                      b"Connection: close\r\n\r\n")
            time.sleep(1.0)  # reads nothing: the upstream is far ahead by now without limits
            paused_growth = proc_status_kb(pid, "VmHWM") - base
            digest = hashlib.sha256()
            head, got = b"", 0
            buf = bytearray()
            while b"\r\n\r\n" not in buf:
                chunk = s.recv(65536)
                self.assertTrue(chunk, "closed before the head")
                buf += chunk
            head, _, rest = bytes(buf).partition(b"\r\n\r\n")
            status, hdrs = th.parse_head(head)
            self.assertEqual((status, hdrs["content-length"]), (200, str(HUGE)))
            digest.update(rest)
            got = len(rest)
            reads = 0
            while got < HUGE:
                chunk = s.recv(256 * 1024)
                if not chunk:
                    break
                got += len(chunk)
                digest.update(chunk)
                reads += 1
                if reads % 64 == 0 and got < HUGE // 2:
                    time.sleep(0.05)  # slowly for the first half
        growth = proc_status_kb(pid, "VmHWM") - base
        self.assertEqual(got, HUGE)
        piece = bytes(range(256)) * 4096
        self.assertEqual(digest.hexdigest(),
                         hashlib.sha256(piece * (HUGE // len(piece))).hexdigest())
        bound = HUGE_GROWTH_BOUND_KB * (4 if th.SANITIZED else 1)
        self.assertLess(paused_growth, bound, "VmHWM grew %d kB while the client read nothing"
                        % paused_growth)
        self.assertLess(growth, bound, "VmHWM grew %d kB over the transfer" % growth)


if __name__ == "__main__":
    unittest.main(verbosity=2)
